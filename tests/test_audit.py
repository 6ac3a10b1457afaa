"""Signer-side key audit, offline: recorded passes through the pure judge and the SQLite history."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import dns.dnssec
import dns.rdatatype
import pytest
from signedzone import Key, SignedZone, make_key

from probe.audit.auditor import AuditConfig, Auditor, AuditReport, assess
from probe.audit.findings import AuditPolicy, ExpiryMargin, Finding, exit_status
from probe.audit.history import KEEP_S, AuditHistory, Version, ZoneMeta, key_history
from probe.audit.snapshot import ParentSnapshot, Role, ServerSnapshot, ZoneSnapshot
from probe.codes import FindingCode, FindingSeverity
from probe.errors import ConfigError
from probe.observation import FLAG_AA, FLAG_QR, Observation, Outcome, RRsetObs
from probe.zones import zone_from_tokens

ZONE = "14.in-addr.arpa."
T0 = 1_800_000_000.0
POLICY = AuditPolicy(margin=300.0, inconsistent_window=600.0)


def _server(z: SignedZone, at: float, published: list[Key], signer: Key | None, *,
            label: str = "192.0.2.1", role: Role = Role.NS, ksk: Key | None = None,
            serial: int = 1, expiration: float | None = None) -> ServerSnapshot:
    z.now = at
    dnskey = z.dnskey_obs(published, sign_with=ksk or z.ksk, server=f"auth:{label}", started=at,
                          expiration=expiration)
    soa = z.record_obs(z.name, "SOA", [f"ns1.{z.name} hostmaster.{z.name} {serial} 3600 600 "
                                       "86400 60"], signer, server=f"auth:{label}",
                       expiration=expiration)
    ptr = z.record_obs(f"1.0.0.{z.name}", "PTR", ["host.example."], signer,
                       server=f"auth:{label}", expiration=expiration)
    return ServerSnapshot(label, role, dnskey, soa, (ptr,))


def _ds(z: SignedZone, at: float, keys: list[Key], *, ttl: int = 3600,
        label: str = "192.0.2.99") -> ParentSnapshot:
    texts = tuple(sorted(dns.dnssec.make_ds(z.name, k.dnskey, "SHA256").to_text() for k in keys))
    obs = Observation(f"auth:{label}", label, 53, z.name, "DS", False, False, at, Outcome.REPLY,
                      rtt_ms=1.0, rcode=0, flags=FLAG_QR | FLAG_AA,
                      answer=(RRsetObs(z.name, "DS", ttl, texts, ()),) if texts else ())
    return ParentSnapshot(label, obs)


class Run:
    """Passes over one zone, the history carried from one to the next as the Auditor does."""

    def __init__(self, policy: AuditPolicy = POLICY) -> None:
        self.history: list[Version] = []
        self.meta: ZoneMeta | None = None
        self.policy = policy

    def audit(self, at: float, servers: list[ServerSnapshot],
              parents: tuple[ParentSnapshot, ...] = ()) -> dict[FindingCode, Finding]:
        snap = ZoneSnapshot(ZONE, at, tuple(servers), "in-addr.arpa.", parents)
        res, self.history, self.meta = assess(snap, self.history, self.meta, self.policy)
        found = {f.code: f for f in res.findings}
        assert len(found) == len(res.findings), "one finding per code and zone"
        return found


@pytest.fixture
def z() -> SignedZone:
    return SignedZone(ZONE, T0, dnskey_ttl=3600)


def test_bad_cutover_is_unsafe_at_publication(z: SignedZone) -> None:
    run = Run()
    first = run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)])
    assert set(first) == {FindingCode.NO_HISTORY}  # says so instead of guessing
    # 2012: the standby's ZSK published and used in one step
    got = run.audit(T0 + 10, [_server(z, T0 + 10, [z.ksk, z.standby], z.standby)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.severity is FindingSeverity.CRITICAL
    assert f.new_keytags == (z.standby.tag,)
    assert set(f.keytags) == {z.ksk.tag, z.zsk.tag}
    assert f.published_before_use_s == 0.0
    assert f.old_set_last_served == T0 + 10  # may have been served until the change was seen
    assert f.at_risk_until == T0 + 10 + 3600
    assert f"key {z.standby.tag} published 0 s before use" in f.detail
    assert FindingCode.KEY_CHANGE in got
    assert got[FindingCode.KEY_CHANGE].new_keytags == (z.standby.tag,)
    # Still at risk later; over once the old set has expired everywhere.
    assert FindingCode.UNSAFE_ROLLOVER in run.audit(
        T0 + 3000, [_server(z, T0 + 3000, [z.ksk, z.standby], z.standby)])
    assert FindingCode.UNSAFE_ROLLOVER not in run.audit(
        T0 + 3700, [_server(z, T0 + 3700, [z.ksk, z.standby], z.standby)])


def test_prepublished_rollover_is_only_key_changes(z: SignedZone) -> None:
    run = Run()
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)])
    t1 = T0 + 60
    got = run.audit(t1, [_server(z, t1, [z.ksk, z.zsk, z.standby], z.zsk)])
    assert set(got) - {FindingCode.NO_HISTORY} == {FindingCode.KEY_CHANGE}
    assert got[FindingCode.KEY_CHANGE].new_keytags == (z.standby.tag,)
    for t in range(int(t1) + 600, int(t1) + 3900, 600):  # audits go on meanwhile
        assert FindingCode.KEY_CHANGE not in run.audit(
            t, [_server(z, t, [z.ksk, z.zsk, z.standby], z.zsk)])
    t2 = t1 + 3600 + 300 + 1  # DNSKEY TTL + margin after publication
    got = run.audit(t2, [_server(z, t2, [z.ksk, z.zsk, z.standby], z.standby)])
    assert got == {}  # history now covers TTL + margin: no-history is gone too
    t3 = t2 + 600
    got = run.audit(t3, [_server(z, t3, [z.ksk, z.standby], z.standby)])
    assert set(got) == {FindingCode.KEY_CHANGE}
    assert "removed " + str(z.zsk.tag) in got[FindingCode.KEY_CHANGE].detail


@pytest.mark.parametrize("wait", [100.0, 3550.0])  # 3550: seen unpublished < TTL + margin ago
def test_prepublication_too_short_is_unsafe(z: SignedZone, wait: float) -> None:
    run = Run()
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)])
    run.audit(T0 + 60, [_server(z, T0 + 60, [z.ksk, z.zsk, z.standby], z.zsk)])
    t = T0 + 60 + wait
    got = run.audit(t, [_server(z, t, [z.ksk, z.zsk, z.standby], z.standby)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.published_before_use_s == wait
    # the set without the key was last served until the audit that saw it published
    assert f.at_risk_until == T0 + 60 + 3600


def test_withdrawn_key_used_again_is_unsafe(z: SignedZone) -> None:
    """The standby signer's key in 2012: once published, withdrawn, then used again."""
    run = Run()
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk, z.standby], z.zsk)])
    for t in range(int(T0) + 600, int(T0) + 9000, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)])
    t = T0 + 9000
    got = run.audit(t, [_server(z, t, [z.ksk, z.standby], z.standby)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.new_keytags == (z.standby.tag,)
    assert f.published_before_use_s == 0.0


def test_key_signing_but_unpublished_on_one_server(z: SignedZone) -> None:
    run = Run()
    a = "192.0.2.1"
    b = "192.0.2.2"
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk, label=a),
                   _server(z, T0, [z.ksk, z.zsk], z.zsk, label=b)])
    t = T0 + 5000
    got = run.audit(t, [_server(z, t, [z.ksk, z.zsk, z.standby], z.standby, label=a),
                        _server(z, t, [z.ksk, z.zsk], z.zsk, label=b)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert "not published by every server" in f.detail
    assert b in f.servers
    assert f.at_risk_until == t + 3600  # b still serves the set without it


def test_standby_with_other_keys_is_a_mismatch_until_synced(z: SignedZone) -> None:
    run = Run()
    standby = "192.0.2.50"
    got = run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk),
                         _server(z, T0, [z.ksk, z.standby], z.standby, label=standby,
                                 role=Role.STANDBY)])
    f = got[FindingCode.SIGNER_KEY_MISMATCH]
    assert f.severity is FindingSeverity.CRITICAL
    assert f.servers == (standby,)
    assert f.new_keytags == tuple(sorted({z.ksk.tag, z.standby.tag}))
    assert f"standby {standby} publishes" in f.detail
    # A standby never counts as a server resolvers use: no unsafe-rollover from it.
    assert FindingCode.UNSAFE_ROLLOVER not in got
    got = run.audit(T0 + 60, [_server(z, T0 + 60, [z.ksk, z.zsk], z.zsk),
                              _server(z, T0 + 60, [z.ksk, z.zsk], z.zsk, label=standby,
                                      role=Role.STANDBY)])
    assert FindingCode.SIGNER_KEY_MISMATCH not in got
    # Same keys published, signing with another published key: a safe switch, no finding.
    got = run.audit(T0 + 120, [_server(z, T0 + 120, [z.ksk, z.zsk, z.standby], z.zsk),
                               _server(z, T0 + 120, [z.ksk, z.zsk, z.standby], z.standby,
                                       label=standby, role=Role.STANDBY)])
    assert FindingCode.SIGNER_KEY_MISMATCH not in got


def test_ksk_swap_without_double_ds_is_unsafe_on_the_ds_side(z: SignedZone) -> None:
    run = Run()
    ksk2 = make_key(True)
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)], (_ds(z, T0, [z.ksk], ttl=7200),))
    t = T0 + 30
    got = run.audit(t, [_server(z, t, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t, [ksk2], ttl=7200),))
    f = got[FindingCode.UNSAFE_ROLLOVER]
    # Both halves at once: the old DS cannot validate the new KSK's DNSKEY set, and the new
    # DS cannot validate the DNSKEY set resolvers may still hold.
    assert f"served a DS set ({z.ksk.tag}) matching none of them" in f.detail
    assert f"serves a DS set ({ksk2.tag}) pointing only to KSK {ksk2.tag}" in f.detail
    assert f.new_keytags == (ksk2.tag,)
    assert z.ksk.tag in f.keytags
    assert f.at_risk_until == t + 7200
    assert "192.0.2.99" in f.servers


def test_double_ds_rollover_is_safe(z: SignedZone) -> None:
    run = Run()
    ksk2 = make_key(True)
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)], (_ds(z, T0, [z.ksk], ttl=600),))
    t1 = T0 + 60  # the new DS is added first
    run.audit(t1, [_server(z, t1, [z.ksk, z.zsk], z.zsk)], (_ds(z, t1, [z.ksk, ksk2], ttl=600),))
    t2 = t1 + 3901  # after the DS TTL + margin (and the history covers the DNSKEY TTL)
    got = run.audit(t2, [_server(z, t2, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t2, [z.ksk, ksk2], ttl=600),))
    assert FindingCode.UNSAFE_ROLLOVER not in got
    t3 = t2 + 60
    got = run.audit(t3, [_server(z, t3, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t3, [ksk2], ttl=600),))
    assert FindingCode.UNSAFE_ROLLOVER not in got


def test_inconsistent_servers_after_the_window_compare_data_not_ttls(z: SignedZone) -> None:
    run = Run()
    a, b = "192.0.2.1", "192.0.2.2"

    def both(t: float, serial_b: int) -> list[ServerSnapshot]:
        return [_server(z, t, [z.ksk, z.zsk], z.zsk, label=a, serial=2),
                _server(z, t, [z.ksk, z.zsk], z.zsk, label=b, serial=serial_b)]

    assert FindingCode.INCONSISTENT_SERVERS not in run.audit(T0, both(T0, 1))
    assert FindingCode.INCONSISTENT_SERVERS not in run.audit(T0 + 300, both(T0 + 300, 1))
    f = run.audit(T0 + 600, both(T0 + 600, 1))[FindingCode.INCONSISTENT_SERVERS]
    assert f.severity is FindingSeverity.WARNING
    assert f.servers == (a, b)
    assert "serial 1" in f.detail and "serial 2" in f.detail
    assert FindingCode.INCONSISTENT_SERVERS not in run.audit(T0 + 660, both(T0 + 660, 2))
    assert run.meta is not None and run.meta.inconsistent_since is None
    # Same data with different TTLs is not a disagreement.
    s1 = _server(z, T0 + 720, [z.ksk, z.zsk], z.zsk, label=a, serial=2)
    z.dnskey_ttl = 60
    s2 = _server(z, T0 + 720, [z.ksk, z.zsk], z.zsk, label=b, serial=2)
    z.dnskey_ttl = 3600
    run.audit(T0 + 720, [s1, s2])
    assert run.meta is not None and run.meta.inconsistent_since is None


@pytest.mark.parametrize(("left_days", "severity"), [
    (1.0, FindingSeverity.CRITICAL),  # 1 of 31 days left: under 10 %
    (5.0, FindingSeverity.WARNING),  # 5 of 35: under 20 %
    (20.0, None),
])
def test_signature_expiry_margins(z: SignedZone, left_days: float,
                                  severity: FindingSeverity | None) -> None:
    z.now = T0
    exp = T0 + left_days * 86400
    # record_obs signs from now - 3600: lifetime ~ left + 30 days when inception is 30 days back
    srv = _server(z, T0, [z.ksk, z.zsk], z.zsk, expiration=exp)
    srv = _with_inception(z, srv, T0 - 30 * 86400, exp)
    got = Run().audit(T0, [srv])
    f = got.get(FindingCode.SIGNATURE_EXPIRY)
    assert (f.severity if f else None) is severity


def _with_inception(z: SignedZone, srv: ServerSnapshot, inception: float,
                    expiration: float) -> ServerSnapshot:
    soa = z.record_obs(z.name, "SOA", [f"ns1.{z.name} hostmaster.{z.name} 1 3600 600 86400 60"],
                       z.zsk, server=f"auth:{srv.server}", inception=inception,
                       expiration=expiration)
    dnskey = z.dnskey_obs([z.ksk, z.zsk], server=f"auth:{srv.server}", started=srv.dnskey.started,
                          expiration=expiration)
    return ServerSnapshot(srv.server, srv.role, dnskey, soa, ())


def test_signature_shorter_than_ttl_warns(z: SignedZone) -> None:
    policy = AuditPolicy(margin=300.0, expiry_warning=ExpiryMargin(seconds=60),
                         expiry_critical=ExpiryMargin(seconds=30))
    srv = _server(z, T0, [z.ksk, z.zsk], z.zsk, expiration=T0 + 1000)  # TTL 3600 > 1000 s
    f = Run(policy).audit(T0, [srv])[FindingCode.SIGNATURE_EXPIRY]
    assert f.severity is FindingSeverity.WARNING
    assert "shorter than the TTL" in f.detail


def test_expiry_margin_parsing() -> None:
    assert ExpiryMargin.parse("20%").percent == 20.0
    assert ExpiryMargin.parse("5d").seconds == 5 * 86400
    assert ExpiryMargin.parse("90").seconds == 90
    for bad in ("", "x", "120%", "5y", "-1d"):
        with pytest.raises(ConfigError):
            ExpiryMargin.parse(bad)
    with pytest.raises(ConfigError):
        AuditPolicy(margin=-1)


def test_no_server_answered_and_exit_status(z: SignedZone) -> None:
    dead = Observation("auth:192.0.2.1", "192.0.2.1", 53, ZONE, "DNSKEY", False, False, T0,
                       Outcome.TIMEOUT, attempts=3)
    got = Run().audit(T0, [ServerSnapshot("192.0.2.1", Role.NS, dead, dead)])
    assert set(got) == {FindingCode.NO_SERVER_ANSWERED}
    assert exit_status(got.values(), audited=False) == 1
    assert exit_status([], audited=False) == 3
    assert exit_status([], audited=True) == 0
    info = Finding(FindingCode.KEY_CHANGE, ZONE, FindingSeverity.INFO, "x")
    assert exit_status([info], audited=True) == 0


def test_snapshot_replays_from_json(z: SignedZone) -> None:
    snap = ZoneSnapshot(ZONE, T0, (_server(z, T0, [z.ksk, z.zsk], z.zsk),), "in-addr.arpa.",
                        (_ds(z, T0, [z.ksk]),), ("a note",))
    again = ZoneSnapshot.from_dict(snap.to_dict())
    assert again == snap
    a, _, _ = assess(snap, [], None, POLICY)
    b, _, _ = assess(again, [], None, POLICY)
    assert a.findings == b.findings and a.servers == b.servers


def test_history_survives_a_restart_and_prunes(tmp_path: Path, z: SignedZone) -> None:
    h = AuditHistory.open(tmp_path)
    auditor = Auditor(AuditConfig(), [], h, POLICY, clock=lambda: T0)
    auditor.record([ZoneSnapshot(ZONE, T0, (_server(z, T0, [z.ksk, z.zsk], z.zsk),))])
    h.close()
    h = AuditHistory.open(tmp_path)  # a new process: the history is on disk
    auditor = Auditor(AuditConfig(), [], h, POLICY, clock=lambda: T0 + 10)
    report = auditor.record([ZoneSnapshot(ZONE, T0 + 10, (
        _server(z, T0 + 10, [z.ksk, z.standby], z.standby),))])
    assert isinstance(report, AuditReport)
    assert {f.code for f in report.findings} >= {FindingCode.UNSAFE_ROLLOVER}
    assert report.exit_status == 2
    doc = report.to_json()
    assert doc["findings"][0].keys() >= {"code", "zone", "severity", "detail", "servers",
                                         "keytags", "new_keytags", "at_risk_until"}
    assert doc["summary"]["findings"]["critical"] == 1
    keys = {k["keytag"]: k for k in doc["zones"][0]["keys"]}
    assert keys[z.standby.tag]["published_first"] == T0 + 10
    assert keys[z.zsk.tag]["published_last"] == T0 and "signing_first" in keys[z.zsk.tag]
    rows = key_history(h.load(ZONE)[0])
    by_tag = {r["keytag"]: r for r in rows}
    assert by_tag[z.zsk.tag]["published_last"] == T0
    assert by_tag[z.standby.tag]["signing_first"] == T0 + 10
    # A version older than KEEP_S goes, except each server's latest.
    later = T0 + KEEP_S + 100
    Auditor(AuditConfig(), [], h, POLICY).record([ZoneSnapshot(ZONE, later, (
        _server(z, later, [z.ksk, z.standby], z.standby),))])
    versions, meta = h.load(ZONE)
    assert meta is not None and meta.first_pass == T0
    assert all(v.last_seen > T0 for v in versions)
    h.close()
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    assert db.execute("SELECT count(*) FROM audit_zones").fetchone()[0] == 1


def test_zones_file_names_signers() -> None:
    from probe.zones import parse_zones

    [spec] = parse_zones(["14.in-addr.arpa primary=192.0.2.5 standby=192.0.2.6,[2001:db8::6]:5353"],
                         path="z.txt")
    assert spec.primary == (("192.0.2.5", 53),)
    assert spec.standby == (("192.0.2.6", 53), ("2001:db8::6", 5353))
    with pytest.raises(ConfigError) as exc:
        parse_zones(["", "14.in-addr.arpa standby=signer.example"], path="z.txt")
    assert "z.txt:2" in str(exc.value) and "standby=" in str(exc.value)


def test_audit_command_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    from probe.cli import main

    bad = tmp_path / "zones.txt"
    bad.write_text("14.in-addr.arpa\n27.in-addr.arpa standby=not-an-address\n")
    with pytest.raises(SystemExit) as info:
        main(["audit", "--zones", str(bad), "--state-dir", str(tmp_path / "s"),
              "--resolver", "r=127.0.0.1:9"])
    assert info.value.code == 3
    assert f"{bad}:2" in capsys.readouterr().err
    for args in (["--expiry-warning", "5y"], ["--raw"], ["--margin", "-1"]):
        with pytest.raises(SystemExit) as info:
            main(["audit", "14.in-addr.arpa", "--state-dir", str(tmp_path / "s"), *args])
        assert info.value.code == 3, args
    assert not (tmp_path / "s").exists()  # nothing was asked or written


def test_failover_by_repointing_the_ns_set_is_unsafe(z: SignedZone) -> None:
    """2012 by another road: the standby becomes the name server. What it signed as a standby
    is not use by a server resolvers ask; the old name server's set is still in caches."""
    run = Run()
    a, s = "192.0.2.1", "192.0.2.50"
    for t in range(int(T0), int(T0) + 7200, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk, label=a),
                      _server(z, t, [z.ksk, z.standby], z.standby, label=s, role=Role.STANDBY)])
    t = T0 + 7200
    got = run.audit(t, [_server(z, t, [z.ksk, z.standby], z.standby, label=s)])  # NS = {S}
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.new_keytags == (z.standby.tag,) and a in f.servers
    # The old server, no longer asked, is taken to have served until one pass interval after
    # it was last seen: the risk ends a TTL after that, not never.
    assert f.at_risk_until == T0 + 6600 + 600 + 3600
    assert FindingCode.UNSAFE_ROLLOVER not in run.audit(
        T0 + 11000, [_server(z, T0 + 11000, [z.ksk, z.standby], z.standby, label=s)])


def test_provider_switch_with_new_keys_is_unsafe(z: SignedZone) -> None:
    run = Run()
    for t in range(int(T0), int(T0) + 7200, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk, label="192.0.2.1")])
    t = T0 + 7200
    got = run.audit(t, [_server(z, t, [z.ksk, z.standby], z.standby, label="198.51.100.1")])
    assert got[FindingCode.UNSAFE_ROLLOVER].new_keytags == (z.standby.tag,)


def test_double_signature_rollover_is_safe(z: SignedZone) -> None:
    """RFC 6781 §4.1.1.2: the new key published and signing beside the old one at once."""
    run = Run()
    k2 = make_key()
    for t in range(int(T0), int(T0) + 7200, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)])
    t = T0 + 7200
    srv = _server(z, t, [z.ksk, z.zsk, k2], z.zsk)
    both = _double_signed(z, srv, [z.zsk, k2])
    got = run.audit(t, [both])
    assert FindingCode.UNSAFE_ROLLOVER not in got and FindingCode.KEY_CHANGE in got
    # Dropping the old key's signatures at once would not be safe; after TTL + margin it is.
    t2 = t + 600
    assert FindingCode.UNSAFE_ROLLOVER not in run.audit(
        t2, [_double_signed(z, _server(z, t2, [z.ksk, z.zsk, k2], z.zsk), [z.zsk, k2])])
    t3 = t2 + 3901
    assert FindingCode.UNSAFE_ROLLOVER not in run.audit(
        t3, [_server(z, t3, [z.ksk, z.zsk, k2], k2)])


def _double_signed(z: SignedZone, srv: ServerSnapshot, keys: list[Key]) -> ServerSnapshot:
    """The server's SOA and PTR signed by every key in `keys`."""
    def resign(obs: Observation) -> Observation:
        rr = obs.answer[0]
        rrset = z._rrset(rr.name, rr.rdtype, rr.ttl, list(rr.rdatas))
        sigs = tuple(z._sign(rrset, k) for k in keys)
        return Observation.from_dict({**obs.to_dict(), "answer": [
            {"name": rr.name, "rdtype": rr.rdtype, "ttl": rr.ttl, "rdatas": list(rr.rdatas),
             "rrsigs": list(sigs)}]})
    return ServerSnapshot(srv.server, srv.role, srv.dnskey, resign(srv.soa),
                          tuple(resign(a) for a in srv.answers))


def test_a_silent_parent_server_does_not_keep_a_risk_forever(z: SignedZone) -> None:
    run = Run()
    ksk2 = make_key(True)
    p1, p2 = "192.0.2.98", "192.0.2.99"
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)],
              (_ds(z, T0, [z.ksk], label=p1, ttl=600), _ds(z, T0, [z.ksk], label=p2, ttl=600)))
    t = T0 + 60
    got = run.audit(t, [_server(z, t, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t, [ksk2], label=p1, ttl=600),))  # p2 times out from now on
    assert FindingCode.UNSAFE_ROLLOVER in got
    later = T0 + 10 * 86400
    got = run.audit(later, [_server(z, later, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, later, [ksk2], label=p1, ttl=600),))
    assert FindingCode.UNSAFE_ROLLOVER not in got


def _two_ksks(z: SignedZone, t: float, ksk2: Key) -> ServerSnapshot:
    """The DNSKEY set with both KSKs, signed by both (the double-KSK method)."""
    srv = _server(z, t, [z.ksk, ksk2, z.zsk], z.zsk)
    rr = srv.dnskey.answer[0]
    rrset = z._rrset(rr.name, "DNSKEY", rr.ttl, list(rr.rdatas))
    both = Observation.from_dict({**srv.dnskey.to_dict(), "answer": [
        {"name": rr.name, "rdtype": "DNSKEY", "ttl": rr.ttl, "rdatas": list(rr.rdatas),
         "rrsigs": [z._sign(rrset, k) for k in (z.ksk, ksk2)]}]})
    return ServerSnapshot(srv.server, srv.role, both, srv.soa, srv.answers)


def test_ds_switched_before_the_new_ksk_spread_is_unsafe(z: SignedZone) -> None:
    """Double-KSK done too fast: the new KSK published beside the old one, and the DS switched
    to it before every cached DNSKEY set can hold it (RFC 7583 §3.3.4)."""
    run = Run()
    ksk2 = make_key(True)
    for t in range(int(T0), int(T0) + 7200, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)], (_ds(z, t, [z.ksk]),))
    t1 = T0 + 7200
    run.audit(t1, [_two_ksks(z, t1, ksk2)], (_ds(z, t1, [z.ksk]),))
    t2 = t1 + 60
    got = run.audit(t2, [_two_ksks(z, t2, ksk2)], (_ds(z, t2, [ksk2]),))
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f"pointing only to KSK {ksk2.tag}" in f.detail
    assert f.at_risk_until == t1 + 3600  # the set without it, last served until t1
    # Done right: after the DNSKEY TTL + margin, the same switch is safe.
    run2 = Run()
    for t in range(int(T0), int(T0) + 7200, 600):
        run2.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)], (_ds(z, t, [z.ksk]),))
    for t in range(int(t1), int(t1) + 4200, 600):
        run2.audit(t, [_two_ksks(z, t, ksk2)], (_ds(z, t, [z.ksk]),))
    t3 = t1 + 4200
    got = run2.audit(t3, [_two_ksks(z, t3, ksk2)], (_ds(z, t3, [ksk2]),))
    assert FindingCode.UNSAFE_ROLLOVER not in got


def test_a_ds_set_of_unsupported_digests_is_no_rollover(z: SignedZone) -> None:
    run = Run()
    ksk2 = make_key(True)
    gost = ParentSnapshot("192.0.2.99", Observation(
        "auth:192.0.2.99", "192.0.2.99", 53, ZONE, "DS", False, False, T0, Outcome.REPLY,
        rtt_ms=1.0, rcode=0, flags=FLAG_QR | FLAG_AA,
        answer=(RRsetObs(ZONE, "DS", 3600, (f"{z.ksk.tag} 13 3 " + "ab" * 32,), ()),)))
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)], (gost,))
    t = T0 + 60
    got = run.audit(t, [_server(z, t, [ksk2, z.zsk], z.zsk, ksk=ksk2)], (gost,))
    assert FindingCode.UNSAFE_ROLLOVER not in got  # validators treat the zone as insecure


def test_a_gap_in_the_audits_is_said(z: SignedZone) -> None:
    run = Run()
    for t in range(int(T0), int(T0) + 7200, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)])
    t = T0 + 7200 + 2 * 3600  # two hours without an audit, then a cut-over is seen
    got = run.audit(t, [_server(z, t, [z.ksk, z.standby], z.standby)])
    assert FindingCode.UNSAFE_ROLLOVER not in got  # never claimed without evidence ...
    assert "previous audit was" in got[FindingCode.NO_HISTORY].detail  # ... but said


def test_a_primary_ahead_of_its_secondaries_has_the_window(z: SignedZone) -> None:
    run = Run()
    p = "192.0.2.10"
    for t in range(int(T0), int(T0) + 7200, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk),
                      _server(z, t, [z.ksk, z.zsk], z.zsk, label=p, role=Role.PRIMARY)])
    t = T0 + 7200  # the primary pre-publishes; the secondaries have not transferred yet
    got = run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk),
                        _server(z, t, [z.ksk, z.zsk, z.standby], z.zsk, label=p,
                                role=Role.PRIMARY)])
    assert FindingCode.SIGNER_KEY_MISMATCH not in got
    t2 = t + 600  # still behind after the window
    got = run.audit(t2, [_server(z, t2, [z.ksk, z.zsk], z.zsk),
                         _server(z, t2, [z.ksk, z.zsk, z.standby], z.zsk, label=p,
                                 role=Role.PRIMARY)])
    assert got[FindingCode.SIGNER_KEY_MISMATCH].servers == (p,)


def test_an_older_pass_is_judged_not_recorded(tmp_path: Path, z: SignedZone) -> None:
    h = AuditHistory.open(tmp_path)
    auditor = Auditor(AuditConfig(), [], h, POLICY)
    auditor.record([ZoneSnapshot(ZONE, T0, (_server(z, T0, [z.ksk, z.zsk], z.zsk),))])
    auditor.record([ZoneSnapshot(ZONE, T0 + 100, (
        _server(z, T0 + 100, [z.ksk, z.zsk, z.standby], z.zsk),))])
    before = h.load(ZONE)
    late = auditor.record([ZoneSnapshot(ZONE, T0 + 50, (
        _server(z, T0 + 50, [z.ksk, z.zsk], z.zsk),))])
    assert h.load(ZONE) == before
    assert not [f for f in late.findings if f.code is FindingCode.KEY_CHANGE]
    h.close()


def test_a_flapping_server_keeps_a_bounded_history(z: SignedZone) -> None:
    from probe.audit.history import MAX_VERSIONS, prune

    run = Run()
    for i in range(2 * MAX_VERSIONS + 10):
        keys = [z.ksk, z.zsk] if i % 2 else [z.ksk, z.zsk, z.standby]
        run.audit(T0 + i, [_server(z, T0 + i, keys, z.zsk)])
    kept = prune(run.history, T0 + 1000)
    per = Counter((v.server, v.kind) for v in kept)
    assert max(per.values()) == MAX_VERSIONS
    assert max(v.first_seen for v in kept) == max(v.first_seen for v in run.history)


def test_collect_asks_each_server_directly_and_boundedly(tmp_path: Path) -> None:
    """RD=0 with DO to every server; the SOA, the DNSKEY set and at most MAX_AUDIT_NAMES probe
    names per server, however many the zone has (this server answers everything empty)."""
    import asyncio

    import dns.flags
    from fakedns import FakeDNS, make_auth_reply

    from probe.audit.collect import MAX_AUDIT_NAMES

    names = " ".join(f"{i}.0.0" for i in range(3 * MAX_AUDIT_NAMES))
    with FakeDNS(lambda req: make_auth_reply(req.wire)) as srv:
        spec = zone_from_tokens([ZONE, *names.split(), f"standby=127.0.0.1:{srv.port}"])
        h = AuditHistory.open(tmp_path)
        auditor = Auditor(AuditConfig(timeout=0.5, retries=0, allow_local_auth=True), [], h,
                          POLICY)
        [snap] = asyncio.run(auditor.collect([spec]))
        h.close()
        msgs = [r.message for r in srv.requests]
    assert [s.role for s in snap.servers] == [Role.STANDBY]
    assert len(msgs) == 2 + MAX_AUDIT_NAMES
    assert all(not m.flags & dns.flags.RD and m.ednsflags & dns.flags.DO for m in msgs)
    assert {dns.rdatatype.to_text(m.question[0].rdtype) for m in msgs} == {"DNSKEY", "SOA", "PTR"}
    assert "no resolver to find the name servers with" in snap.notes


def test_a_ds_that_never_matched_is_no_rollover(z: SignedZone) -> None:
    """The parent's DS points at a key the zone never published (lab zone 39): the chain is
    broken from the start — bogus for the resolvers, not an unsafe rollover."""
    run = Run()
    ghost = make_key(True)
    for t in range(int(T0), int(T0) + 1200, 600):
        got = run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)], (_ds(z, t, [ghost]),))
        assert FindingCode.UNSAFE_ROLLOVER not in got


def test_the_table_shows_findings_and_says_no_history_once(z: SignedZone) -> None:
    from rich.console import Console

    from probe.audit.report import render_audit

    snap = ZoneSnapshot(ZONE, T0, (_server(z, T0, [z.ksk, z.zsk], z.zsk),
                                   _server(z, T0, [z.ksk, z.standby], z.standby,
                                           label="192.0.2.50", role=Role.STANDBY)))
    audit, _, _ = assess(snap, [], None, POLICY)
    out = Console(record=True, width=200)
    render_audit(AuditReport(T0, (audit,)), out)
    text = out.export_text()
    assert "signer-key-mismatch" in text and "192.0.2.50" in text
    assert text.count("no-history") == 1 and "1 zone(s) (14.in-addr.arpa.)" in text
    assert "1 of 1 zone(s) audited: 1 info, 0 warning, 1 critical" in text
